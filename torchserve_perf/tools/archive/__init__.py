"""``torchserve-perf archive``: a .mar for your own model with our handler bundled.

- :mod:`.plan`: what one archive is built from (:class:`ArchivePlan`, :class:`ModelSource`);
- :mod:`.model_config`: the model-config.yaml written, merged and checked;
- :mod:`.inputs`: the user's handler, labels and extra files, and the checks before building;
- :mod:`.verify` (and its child :mod:`.load_check`): the model loaded as a worker will;
- :mod:`.staging` and :mod:`.build`: the files staged and torch-model-archiver run;
- :mod:`.kserve`: the KServe layout's config.properties;
- :mod:`.hf`: a Hugging Face save_pretrained folder (``--hf-model``, ``--samples``);
- :mod:`.cli`: the command line.
"""

from torchserve_perf.tools.archive.build import create_archive
from torchserve_perf.tools.archive.cli import main
from torchserve_perf.tools.archive.inputs import read_labels
from torchserve_perf.tools.archive.kserve import kserve_properties
from torchserve_perf.tools.archive.model_config import optimizations_section
from torchserve_perf.tools.archive.plan import ArchiveError, ArchivePlan, ModelSource
from torchserve_perf.tools.archive.staging import stage_packages

__all__ = ["ArchiveError", "ArchivePlan", "ModelSource", "create_archive", "kserve_properties", "main",
           "optimizations_section", "read_labels", "stage_packages"]
