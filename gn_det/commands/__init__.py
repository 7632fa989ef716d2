"""gn_det's commands, one module each: `main(argv=None)` parses detectron2-style arguments and
makes one call into the package; `run()` runs it as a CLI (a user error is one `<prog>: error:`
line and exit status 2; --debug shows the traceback). Each is installed as a console script
`gn-det-<name>` and kept as `tools/<name>.py`, a two-line wrapper, as detectron2 users expect."""
