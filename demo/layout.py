"""The dashboard's layout: ``build_app(engine) -> gr.Blocks``, the tabs of :mod:`demo.tabs` in order.

Each tab module lays out its tab and binds its events; :mod:`demo.callbacks` (one module per tab)
translates between the components' values and the engine, the composition of the services of
:class:`demo.protocol.DashboardEngine` that do the work. Every public event has an ``api_name`` so
gradio_client can drive it; pure UI plumbing (tab changes, gallery clicks) is private.
"""
from __future__ import annotations

import gradio as gr

from demo.protocol import DashboardEngine
from demo.serving import Access
from demo.tabs import browse, compare, drs, finetune, reconstructions, results, runs, stage2, superpixels
from demo.tabs.common import Page, header, wire_page


def build_app(engine: DashboardEngine, access: Access | None = None) -> gr.Blocks:
    """The whole dashboard around ``engine`` (demo.engine.Engine or a test fake).

    Building asks the engine only what it can answer without building a model: the menus'
    checkpoints are read, not verified, and the page's load event refreshes them (verified).
    ``access`` (demo.serving.Access; None: no logins) says whether users log in, who the admins
    are, each user's fine-tune limit and the banner of an app served without login to the network.
    """
    page = Page.of(engine, access or Access())
    with gr.Blocks(title="CRM Lab", analytics_enabled=False) as app:
        head = header(page.access)
        with gr.Tabs(selected="compare") as tabs:
            view = compare.build(page)
            browse_model = browse.build(page, view, tabs)
            drs_model = drs.build(page, view.source)
            sp_model = superpixels.build(page, view.source)
            rec_models = reconstructions.build(page, view.source)
            stage2.build(page)
            runs_sel = runs.build(page)
            results.build(page)
            ft_base = finetune.build(page, runs_sel)
        # The checkpoint menus, in the order demo.callbacks.refresh_checkpoints takes them.
        pickers = [view.model_a, view.model_b, drs_model, sp_model, browse_model, rec_models, ft_base, runs_sel]
        wire_page(app, page, head, pickers, view.startup, view.then_classes)
    return app
