//! Round trips across split and coalesce.
