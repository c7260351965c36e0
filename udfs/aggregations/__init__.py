"""The aggregation library: sliding-window buckets and accumulators over them, shared by the
feature job, training and every offline path (see :mod:`.windows`, :mod:`.accumulators`)."""
