"""Heavy helpers of the data pipeline: the tokenized table cache and padding-free packing."""
