//! `callbox doctor` (being written).

/// Runs every check and prints one line each; true when nothing failed.
pub async fn run(_path: &std::path::Path) -> bool {
    true
}
