//! The examples' command-line choices as clap value enums, so `--help` lists them and clap
//! refuses anything else: each wraps one of the crate's types, named as its `name()`.

#![allow(dead_code)] // each example uses some of them

use clap::ValueEnum;
use clap::builder::PossibleValue;
use efficientnet_burn::{DeviceChoice, Precision, Variant, WeightSource};

macro_rules! choice {
    ($(#[$doc:meta])* $name:ident($ty:ty), $all:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name(pub $ty);

        impl ValueEnum for $name {
            fn value_variants<'a>() -> &'a [Self] {
                const ALL: [$name; $all.len()] = {
                    let mut all = [$name($all[0]); $all.len()];
                    let mut i = 0;
                    while i < all.len() {
                        all[i] = $name($all[i]);
                        i += 1;
                    }
                    all
                };
                &ALL
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(PossibleValue::new(self.0.name()).aliases(aliases(&self.0)))
            }
        }
    };
}

/// Other spellings clap accepts: `--device cpu` for flex (the crate's own aliases); none for
/// the rest.
fn aliases(value: &dyn core::any::Any) -> &'static [&'static str] {
    match value.downcast_ref::<DeviceChoice>() {
        Some(device) => device.aliases(),
        None => &[],
    }
}

choice!(
    /// `--variant`: a published variant.
    VariantArg(Variant),
    Variant::ALL
);
choice!(
    /// `--source`: the library a checkpoint comes from.
    SourceArg(WeightSource),
    WeightSource::ALL
);
choice!(
    /// `--device`: the backend, as compiled in.
    DeviceArg(DeviceChoice),
    DeviceChoice::ALL
);
choice!(
    /// `--precision`: what the CPU engine keeps the weights in.
    PrecisionArg(Precision),
    Precision::ALL
);
#[cfg(feature = "train")]
choice!(
    /// `--recipe`: the training recipe.
    RecipeArg(efficientnet_burn::train::Recipe),
    efficientnet_burn::train::Recipe::ALL
);
