//! The README prints the path table; keep it exactly in step with the code.

use mirador_router::api::PATH_TABLE;

#[test]
fn the_readme_path_table_is_the_code_path_table() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let rows: Vec<String> = readme
        .lines()
        .filter(|l| l.starts_with("| metrics |") || l.starts_with("| logs |") || l.starts_with("| traces |"))
        .map(str::to_string)
        .collect();
    let expected: Vec<String> = PATH_TABLE
        .iter()
        .map(|(pattern, signal, access)| format!("| {signal} | {} | `{pattern}` |", access.as_str()))
        .collect();
    assert_eq!(rows, expected);
}
