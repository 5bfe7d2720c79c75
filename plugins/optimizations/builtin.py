"""The built-in plugins. Adding one: write its module, then list its class here."""

from torchserve_perf.plugins.optimizations.autocast import BF16, FP16
from torchserve_perf.plugins.optimizations.channels_last import ChannelsLast
from torchserve_perf.plugins.optimizations.compile import Compile
from torchserve_perf.plugins.optimizations.cuda_graphs import CudaGraphs
from torchserve_perf.plugins.optimizations.ipex import Ipex
from torchserve_perf.plugins.optimizations.onnx_runtime import OnnxRuntime
from torchserve_perf.plugins.optimizations.quantize import QuantizeDynamic
from torchserve_perf.plugins.optimizations.tensorrt import TensorRT
from torchserve_perf.plugins.optimizations.torchscript import TorchScript

BUILTIN_PLUGINS = (ChannelsLast, TorchScript, QuantizeDynamic, BF16, FP16, OnnxRuntime, Ipex, TensorRT, Compile,
                  CudaGraphs)
