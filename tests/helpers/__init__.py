"""Test helpers: tiny models, GGUF files and run folders made offline (imported as tests.helpers.*)."""
