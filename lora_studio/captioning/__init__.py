"""The captioning process: tags (WD14 ONNX taggers, through onnxruntime) or describes
(BLIP, Florence-2, through transformers) a dataset's images and writes each caption
beside its image as soon as it is made. Started as ``python -m lora_studio.captioning``
by the window and the command line (runs/caption_protocol.py)."""
