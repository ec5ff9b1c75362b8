"""What an exported artifact is held to, defined once: the export and parity stages check them,
the artifacts table marks them met or missed, and the int8 study judges its variants by them."""

FLOAT_AGREEMENT = 0.999       # float formats: top-1 agreement with the Keras model, share of test images
INT8_SIZE_RATIO = 0.30        # int8 TF-Lite: at most this share of the float32 TF-Lite file's bytes
INT8_ACCURACY_DROP_PP = 0.5   # int8 TF-Lite: at most this many points of test accuracy below Keras
INT8_FLOOR_MARGIN = 0.01      # ... or, over INT8_SIZE_RATIO, within this share of float32 of its structural floor
PAGE_LATENCY_MS = 50          # the demo page's default model (the most accurate): median ms per image in headless Chromium
