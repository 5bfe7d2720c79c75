"""The built-in plugins. Adding one: write its module, then list its class here."""

from plugins.optimizations.autocast import BF16, FP16
from plugins.optimizations.channels_last import ChannelsLast
from plugins.optimizations.compile import Compile
from plugins.optimizations.ipex import Ipex
from plugins.optimizations.onnx_runtime import OnnxRuntime
from plugins.optimizations.quantize import QuantizeDynamic
from plugins.optimizations.tensorrt import TensorRT
from plugins.optimizations.torchscript import TorchScript

BUILTIN_PLUGINS = (ChannelsLast, TorchScript, QuantizeDynamic, BF16, FP16, OnnxRuntime, Ipex, TensorRT, Compile)
