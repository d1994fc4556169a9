"""The Gradio app's page (``layout.py``) and its event handlers (``handlers.py``); see ``app.py``."""
