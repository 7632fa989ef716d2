"""Small helpers shared across gn_det: file writing and JSON reading (file_io), what the process
runs on and uses (machine), and the environment of the processes gn_det starts (processes)."""
