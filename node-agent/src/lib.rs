//! Berqenas node agent library: reconcile planners and host drivers (not built yet).
