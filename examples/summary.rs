//! Prints every published EfficientNet variant: multipliers, channels, blocks, parameters and
//! multiply-adds at its own resolution, as Markdown (default) or JSON.
//!
//! ```text
//! cargo run --release --example summary
//! cargo run --release --example summary -- --json
//! ```
//!
//! The figures are computed from the configs, the same code paths the models are built from;
//! `tests/variants.rs` checks them against the built models and the published numbers.

use clap::Parser;
use efficientnet_burn::{EfficientNetConfig, Variant};
use serde_json::json;

/// Print the table of EfficientNet presets.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Print one JSON object per preset instead of a Markdown table.
    #[arg(long)]
    json: bool,
}

struct Row {
    variant: Variant,
    config: EfficientNetConfig,
    params: usize,
    gmacs: f64,
}

fn main() {
    let args = Args::parse();
    let rows: Vec<Row> = Variant::ALL
        .iter()
        .map(|&variant| {
            let config = variant.config();
            let res = config.resolution;
            Row {
                variant,
                params: config.num_params(),
                gmacs: config.macs(res, res) as f64 / 1e9,
                config,
            }
        })
        .collect();

    if args.json {
        let objects: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.variant.name(),
                    "width": r.config.width,
                    "depth": r.config.depth,
                    "resolution": r.config.resolution,
                    "dropout": r.config.dropout,
                    "stem": r.config.scaled_stem_channels(),
                    "head": r.config.scaled_head_channels(),
                    "blocks": r.config.stage_repeats().iter().sum::<usize>(),
                    "params": r.params,
                    "gmacs": (r.gmacs * 1000.0).round() / 1000.0,
                })
            })
            .collect();
        match serde_json::to_string_pretty(&objects) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("error: {error}");
                std::process::exit(1);
            }
        }
        return;
    }

    println!(
        "| name | width | depth | resolution | dropout | stem | head | blocks | params | GMACs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let c = &r.config;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} |",
            r.variant.name(),
            c.width,
            c.depth,
            c.resolution,
            c.dropout,
            c.scaled_stem_channels(),
            c.scaled_head_channels(),
            c.stage_repeats().iter().sum::<usize>(),
            thousands(r.params),
            r.gmacs
        );
    }
}

/// `5288548` -> `5,288,548`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
