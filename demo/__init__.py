"""CRM Lab's Gradio dashboard: UI modules over a typed engine surface, and the engine adapter.

``build_app(engine)`` (demo.layout) wires the UI to an engine object that composes the services
of :class:`demo.protocol.DashboardEngine` (:class:`demo.engine.Engine` in production, a fake in
tests); nothing in the UI builds a model. The UI modules (layout, tabs, callbacks, plots, render,
messages) import ``crm_core`` only through ``crm_core.api``; the adapter (engine, bootstrap,
bench) may import any ``crm_core`` module. ``tests/test_layering.py`` checks both.
"""
