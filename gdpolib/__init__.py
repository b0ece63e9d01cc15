"""gdpolib: GDPO and GPO for pluralistic alignment (see README.md and ARCHITECTURE.md)."""
import warnings

# tqdm.auto (gdpolib, transformers, datasets) warns once per kernel that ipywidgets is missing,
# then draws a text bar, which is all a notebook here needs: the warning says nothing to a user.
warnings.filterwarnings("ignore", message="IProgress not found")
# TRL 1.16 reads model.is_gradient_checkpointing, which transformers 5 renamed: a warning per
# training stage about TRL's code, not the user's (our own configs use the new name).
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                        category=FutureWarning)
