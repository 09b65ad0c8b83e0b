"""The files of a trained model's folder: training writes them, the train stage seals them, predict reads them.

No TensorFlow here, so that every layer can name them without loading it.
"""

from __future__ import annotations

MODEL_FILE = "model.keras"  # the Keras model, loaded in safe mode
LABELS_FILE = "labels.json"  # the genres, in the order of the model's outputs
HISTORY_FILE = "history.csv"  # one row an epoch: the metrics Keras logged
AUDIO_FILE = "audio.json"  # the AudioConfig the training clips were cut and transformed with
BACKUP_DIR = "backup"  # Keras BackupAndRestore's checkpoints while training runs
TRAINED_FILES: tuple[str, ...] = (MODEL_FILE, HISTORY_FILE, LABELS_FILE)  # what model.train writes
