"""Where the project's own files are: the shipped models and the notebooks, next to the package."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # llama2_lab/utils/paths.py -> the repository
MODELS_DIR = PROJECT_ROOT / "assets" / "models"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
