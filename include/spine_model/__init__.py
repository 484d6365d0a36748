"""The project's spine segmentation models: networks, training and evaluation.

This package needs only ``torch``, ``monai`` and ``numpy``; it never imports
``static_dicomweb`` or Airflow.  The same code runs as the ``local`` training
backend (in the MONAI Label virtualenv, ``clients/monailabel/.venv``), as a
SageMaker script-mode entry point (``python -m spine_model.train``), and inside
the MONAI Label app's ``spine_cpu`` config, so training and inference agree on
the network, the voxel spacing and the intensity scaling.

A training data set is a folder holding ``manifest.json`` and one ``.npz`` file
per case (see :mod:`spine_model.data`).
"""
