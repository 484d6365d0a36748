"""MONAI Label config ``spine_cpu``: the project's small CPU spine model (the embedded default).

The network, voxel spacing, patch size and intensity window come from the project's
``spine_model`` package (``include/spine_model``, on ``PYTHONPATH`` via ``start.sh``), so
MONAI Label infers exactly what ``spine_training`` trains.  Weights are never downloaded:
they come from ``spine_training`` (published, then uploaded by ``monailabel_refresh`` with
``PUT /model/spine_cpu``) or from this server's own training (``POST /train/spine_cpu``).
"""

import logging
import os
from typing import Any, Dict, Optional, Union

from lib.infers.spine_cpu import SpineCpuInfer
from lib.trainers.spine_cpu import SpineCpuTrain
from spine_model.specs import SPINE_CPU

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

logger = logging.getLogger(__name__)


class SpineCpu(TaskConfig):
    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.spec = SPINE_CPU
        self.labels = dict(SPINE_CPU.labels)
        # the last existing path is used; PUT /model/spine_cpu writes the last one
        self.path = [os.path.join(self.model_dir, f"{name}.pt")]
        self.network = SPINE_CPU.network()

    def infer(self) -> Union[InferTask, Dict[str, InferTask]]:
        return SpineCpuInfer(path=self.path, network=self.network, spec=self.spec, labels=self.labels)

    def trainer(self) -> Optional[TrainTask]:
        output_dir = os.path.join(self.model_dir, self.name)
        return SpineCpuTrain(model_dir=output_dir, network=self.network, spec=self.spec,
                             load_path=self.path[0], publish_path=self.path[0],
                             description="Train the small CPU spine model", labels=self.labels)
