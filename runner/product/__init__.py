"""What is made of a run's tiles as a whole: the RGB quick-look (:mod:`~runner.product.quicklook`)."""
