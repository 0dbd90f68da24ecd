"""CRM Lab's Gradio dashboard: engine adapter, callbacks, plots and layout.

``build_app(engine)`` (demo.layout) wires the UI to an engine object
(:class:`demo.engine.Engine` in production, a fake in tests); nothing here builds a model.
"""
