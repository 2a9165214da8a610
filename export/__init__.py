"""actlab export: ResNets with any catalogue activation → trained → verified ONNX → repository.

Entry points: ``python -m export`` (CLI), ``export.build.build_model`` (one build),
``export.pipeline.export_and_publish`` (export, check, parity, publish any torch model) and
``export.publish.publish_model`` (publish an already-built ONNX graph with its card).
"""
