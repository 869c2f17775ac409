"""airspeed velocity (asv) benchmarks of fastdropout (see asv.conf.json)."""
