"""vl_distill_ros: open-vocabulary perception distilled from a vision-language teacher."""

__version__ = "0.1.0"
