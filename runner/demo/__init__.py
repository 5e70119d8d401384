"""``gmrun demo``: the demo's layout (:mod:`~runner.demo.layout`), its synthetic Sentinel-2
catalog (:mod:`~runner.demo.synth`) and the run end to end (:func:`runner.demo.run.run_demo`)."""
