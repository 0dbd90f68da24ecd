"""The dashboard's tabs, one module each, in page order: compare, browse, drs, superpixels,
reconstructions, stage2, runs, results, finetune.

Each module's ``build(page, ...)`` lays out its tab and binds its events, taking what it needs of
the tabs before it and returning what later tabs or the page need (its checkpoint menu, or
Compare's image). :mod:`~demo.tabs.common` holds what they share: the :class:`~demo.tabs.common.Page`
they are built on, the header, and the events that span every tab (:func:`~demo.tabs.common.wire_page`).
Their callbacks are the functions of :mod:`demo.callbacks`, one module per tab as here.
"""
