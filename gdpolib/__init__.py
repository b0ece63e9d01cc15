"""gdpolib: GDPO and GPO for pluralistic alignment (see README.md and ARCHITECTURE.md)."""
import warnings

# tqdm.auto (gdpolib, transformers, datasets) warns once per kernel that ipywidgets is missing,
# then draws a text bar, which is all a notebook here needs: the warning says nothing to a user.
warnings.filterwarnings("ignore", message="IProgress not found")
