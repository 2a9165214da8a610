"""The Open Inference Protocol (KServe v2) with Triton's binary-data, classification,
model-configuration and statistics extensions; the routes are in ``service.routes.v2``."""
