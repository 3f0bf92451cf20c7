# The branchrec CLI (recordings, hold, audit, keys, status) reads the box's configuration.
export BRANCHREC_CONFIG=/etc/branchrec/config.toml
