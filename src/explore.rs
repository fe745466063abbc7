//! The compound-scaling explorer: the paper's step 1, a small grid search for
//! `alpha, beta, gamma >= 1` with `alpha * beta^2 * gamma^2` near a target FLOPs factor, and
//! for comparison single-dimension scaling (width, depth or resolution only) to the same
//! MACs, as in the paper's Figures 3 and 8. Parameters and MACs come from the crate's own
//! counters, so rounding (channels to multiples of 8, repeats up) shows.

use core::fmt;

use crate::config::EfficientNetConfig;
use crate::error::Error;

/// How a candidate was scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// The unscaled baseline.
    Baseline,
    /// Depth, width and resolution together (`alpha, beta, gamma`).
    Compound,
    /// Width only.
    Width,
    /// Depth only.
    Depth,
    /// Resolution only.
    Resolution,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Baseline => "baseline",
            Method::Compound => "compound",
            Method::Width => "width",
            Method::Depth => "depth",
            Method::Resolution => "resolution",
        })
    }
}

/// One scaled model.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// How it was scaled.
    pub method: Method,
    /// Depth multiplier over the baseline.
    pub alpha: f64,
    /// Width multiplier over the baseline.
    pub beta: f64,
    /// Resolution multiplier over the baseline.
    pub gamma: f64,
    /// The scaled config.
    pub config: EfficientNetConfig,
    /// Its trainable parameters.
    pub params: usize,
    /// Its multiply-adds at its resolution.
    pub macs: u64,
}

impl Candidate {
    /// `alpha * beta^2 * gamma^2`, the FLOPs factor the rule predicts.
    pub fn flops_factor(&self) -> f64 {
        self.alpha * self.beta * self.beta * self.gamma * self.gamma
    }

    fn new(
        method: Method,
        base: &EfficientNetConfig,
        alpha: f64,
        beta: f64,
        gamma: f64,
    ) -> Result<Self, Error> {
        let config = scale(base, alpha, beta, gamma);
        config.validate()?;
        Ok(Self {
            method,
            alpha,
            beta,
            gamma,
            params: config.num_params(),
            macs: config.macs(config.resolution, config.resolution),
            config,
        })
    }
}

/// The baseline as a candidate (all multipliers 1).
pub fn baseline(base: &EfficientNetConfig) -> Result<Candidate, Error> {
    Candidate::new(Method::Baseline, base, 1.0, 1.0, 1.0)
}

/// `base` with depth x `alpha`, width x `beta`, resolution x `gamma` (rounded).
pub fn scale(base: &EfficientNetConfig, alpha: f64, beta: f64, gamma: f64) -> EfficientNetConfig {
    base.clone()
        .with_depth(base.depth * alpha)
        .with_width(base.width * beta)
        .with_resolution(((base.resolution as f64 * gamma).round() as usize).max(1))
}

/// The grid of the search.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    /// The FLOPs factor to reach (the paper: 2).
    pub target: f64,
    /// Grid spacing of each multiplier (the paper's search used 0.05).
    pub step: f64,
    /// How far `alpha * beta^2 * gamma^2` may be from `target`. The paper's own result,
    /// 1.2 * 1.1^2 * 1.15^2 = 1.92, is 0.08 off.
    pub tolerance: f64,
}

impl Default for Grid {
    fn default() -> Self {
        Self {
            target: 2.0,
            step: 0.05,
            tolerance: 0.1,
        }
    }
}

/// The most values one multiplier takes in [`compound_candidates`] (the default grid takes
/// 23): at most 200^3 / 6 or so triples are looked at.
pub const MAX_GRID_POINTS: usize = 200;

/// Every `alpha, beta, gamma` on the grid (from 1 up) with `|alpha beta^2 gamma^2 - target| <=
/// tolerance`, each with its model's params and MACs.
pub fn compound_candidates(
    base: &EfficientNetConfig,
    grid: &Grid,
) -> Result<Vec<Candidate>, Error> {
    let usable = grid.target >= 1.0
        && grid.step > 0.0
        && grid.tolerance >= 0.0
        && (grid.target + grid.tolerance).is_finite();
    if !usable {
        return Err(Error::InvalidSearch(format!(
            "the grid needs a finite target >= 1, step > 0 and tolerance >= 0, got {grid:?}"
        )));
    }
    let limit = grid.target + grid.tolerance;
    // A tiny step would make the search practically endless (and below f64's resolution
    // near 1, truly endless): bound the values each multiplier takes.
    let points = (limit - 1.0) / grid.step;
    if points > MAX_GRID_POINTS as f64 {
        return Err(Error::InvalidSearch(format!(
            "the grid would take {points:.0} values per multiplier, at most \
             {MAX_GRID_POINTS}: use a step of at least {:.2e}",
            (limit - 1.0) / MAX_GRID_POINTS as f64
        )));
    }
    let values = |max: f64| {
        (0..)
            .map(move |i| 1.0 + i as f64 * grid.step)
            .take_while(move |&v| v <= max + 1e-9)
    };
    let mut candidates = Vec::new();
    for alpha in values(limit) {
        for beta in values((limit / alpha).sqrt()) {
            for gamma in values((limit / (alpha * beta * beta)).sqrt()) {
                let factor = alpha * beta * beta * gamma * gamma;
                if (factor - grid.target).abs() <= grid.tolerance + 1e-9 {
                    candidates.push(Candidate::new(Method::Compound, base, alpha, beta, gamma)?);
                }
            }
        }
    }
    Ok(candidates)
}

/// Width-only, depth-only and resolution-only scaling of `base` to about `target_macs`: for
/// each, the smallest multiplier (to 1e-3) whose model has at least that many MACs.
pub fn single_dimension(
    base: &EfficientNetConfig,
    target_macs: u64,
) -> Result<Vec<Candidate>, Error> {
    let mut out = Vec::new();
    for method in [Method::Width, Method::Depth, Method::Resolution] {
        let build = |m: f64| match method {
            Method::Width => Candidate::new(method, base, 1.0, m, 1.0),
            Method::Depth => Candidate::new(method, base, m, 1.0, 1.0),
            _ => Candidate::new(method, base, 1.0, 1.0, m),
        };
        let (mut low, mut high) = (1.0, 2.0);
        while build(high)?.macs < target_macs {
            low = high;
            high *= 2.0;
            if high > 1024.0 {
                return Err(Error::InvalidSearch(format!(
                    "{method} scaling cannot reach {target_macs} MACs"
                )));
            }
        }
        while high - low > 1e-3 {
            let mid = 0.5 * (low + high);
            if build(mid)?.macs >= target_macs {
                high = mid;
            } else {
                low = mid;
            }
        }
        out.push(build(high)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_that_would_not_end_are_refused() {
        let base = EfficientNetConfig::b0();
        let tiny = Grid {
            step: 1e-300,
            ..Grid::default()
        };
        let err = compound_candidates(&base, &tiny).unwrap_err();
        assert!(err.to_string().contains("at most 200"), "{err}");
        let endless = Grid {
            target: f64::INFINITY,
            ..Grid::default()
        };
        assert!(compound_candidates(&base, &endless).is_err());
        let nan = Grid {
            tolerance: f64::NAN,
            ..Grid::default()
        };
        assert!(compound_candidates(&base, &nan).is_err());
    }

    #[test]
    fn every_candidate_satisfies_the_constraint_and_the_papers_is_among_them() {
        let base = EfficientNetConfig::b0();
        let grid = Grid::default();
        let candidates = compound_candidates(&base, &grid).unwrap();
        assert!(candidates.len() > 10, "{}", candidates.len());
        for c in &candidates {
            assert!(c.alpha >= 1.0 && c.beta >= 1.0 && c.gamma >= 1.0);
            assert!((c.flops_factor() - 2.0).abs() <= 0.1 + 1e-9, "{c:?}");
            assert_eq!(c.params, c.config.num_params());
        }
        let paper = candidates
            .iter()
            .find(|c| {
                (c.alpha - 1.2).abs() < 1e-9
                    && (c.beta - 1.1).abs() < 1e-9
                    && (c.gamma - 1.15).abs() < 1e-9
            })
            .expect("1.2, 1.1, 1.15 is on the grid");
        // B0 at depth 1.2, width 1.1, 258 px: the crate's counters, not the rule, decide.
        assert_eq!(paper.config.resolution, 258);
        assert!(paper.macs > base.macs(224, 224));
        // A tighter tolerance keeps fewer.
        let tight = compound_candidates(
            &base,
            &Grid {
                tolerance: 0.01,
                ..grid
            },
        )
        .unwrap();
        assert!(tight.len() < candidates.len());
        assert!(compound_candidates(&base, &Grid { step: 0.0, ..grid }).is_err());
    }

    #[test]
    fn single_dimension_scaling_reaches_the_macs_with_one_multiplier() {
        let base = EfficientNetConfig::b0();
        let target = 2 * base.macs(224, 224);
        let singles = single_dimension(&base, target).unwrap();
        assert_eq!(
            singles.iter().map(|c| c.method).collect::<Vec<_>>(),
            [Method::Width, Method::Depth, Method::Resolution]
        );
        for c in &singles {
            let moved = [c.alpha, c.beta, c.gamma]
                .iter()
                .filter(|&&m| m != 1.0)
                .count();
            assert_eq!(moved, 1, "{c:?}");
            // At least the target, and not far past it (depth moves in whole blocks).
            assert!(
                c.macs >= target && (c.macs as f64) < 1.25 * target as f64,
                "{c:?}"
            );
        }
        // Resolution alone: MACs ~ r^2, so about sqrt(2) x 224.
        let r = singles[2].config.resolution as f64;
        assert!((r / 224.0 - 2f64.sqrt()).abs() < 0.05, "{r}");
    }

    #[test]
    fn macs_of_phi_1_to_3_grow_about_two_to_the_phi() {
        // The explorer's own scale() with the paper's coefficients: x2.57, x4.69, x8.43
        // (rounding up of B0's short stages inflates small phi; see tests/variants.rs).
        let base = EfficientNetConfig::b0();
        let base_macs = base.macs(224, 224) as f64;
        for phi in 1..=3 {
            let phi = phi as f64;
            let c = scale(&base, 1.2f64.powf(phi), 1.1f64.powf(phi), 1.15f64.powf(phi));
            let ratio = c.macs(c.resolution, c.resolution) as f64 / base_macs;
            let rule = 2f64.powf(phi);
            assert!(
                ratio > 0.9 * rule && ratio < 1.4 * rule,
                "phi {phi}: x{ratio:.2} vs x{rule}"
            );
        }
    }
}
