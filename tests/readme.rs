//! The documents must say what the crate computes (no doc drift): docs/variants.md's variant
//! table, and README stays a newcomer's page.

use efficientnet_burn::Variant;

#[test]
fn variant_table_matches_the_crate() {
    let readme = include_str!("../docs/variants.md");
    for variant in Variant::ALL {
        let config = variant.config();
        let prefix = format!("| {} |", variant.name());
        let row = readme
            .lines()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("docs/variants.md has no row for {variant}"));
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let res = config.resolution;
        assert_eq!(cells[3], res.to_string(), "{variant} resolution");
        assert_eq!(
            cells[5],
            config.scaled_stem_channels().to_string(),
            "{variant} stem"
        );
        assert_eq!(
            cells[6],
            config.scaled_head_channels().to_string(),
            "{variant} head"
        );
        let params: usize = cells[8].replace(',', "").parse().expect("params cell");
        assert_eq!(params, config.num_params(), "{variant} params");
        let gmacs = format!("{:.3}", config.macs(res, res) as f64 / 1e9);
        assert_eq!(cells[9], gmacs, "{variant} GMACs");
    }
}

#[test]
fn readme_is_short_and_links_the_moved_sections() {
    let readme = include_str!("../README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines; move detail to docs/"
    );
    for doc in ["docs/weights.md", "docs/performance.md", "docs/variants.md"] {
        assert!(
            readme.contains(&format!("]({doc})")),
            "README does not link {doc}"
        );
    }
}
