//! Choosing a device by name, for programs with a `--device` flag.

use core::str::FromStr;

use burn::tensor::Device;

use crate::error::Error;

/// A backend a program can ask for. Which ones work depends on the Cargo features the crate
/// was built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceChoice {
    /// Burn's `flex` CPU backend (feature `flex`, the default): the CPU backend the crate's
    /// inference engine runs on. `"cpu"` parses to it.
    Flex,
    /// Burn's deprecated `ndarray` CPU backend (feature `ndarray`).
    Ndarray,
    /// The default wgpu adapter (feature `wgpu`).
    Wgpu,
    /// CUDA device 0 (feature `cuda`).
    Cuda,
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(DeviceChoice::Flex),
            "ndarray" => Ok(DeviceChoice::Ndarray),
            "wgpu" | "gpu" => Ok(DeviceChoice::Wgpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            _ => Err(Error::UnknownDevice(s.to_string())),
        }
    }
}

fn not_built(choice: &str, feature: &str) -> Error {
    Error::Backend(format!(
        "device {choice} is not compiled in: rebuild with `--features {feature}`"
    ))
}

impl DeviceChoice {
    /// Every choice.
    pub const ALL: [DeviceChoice; 4] = [
        DeviceChoice::Flex,
        DeviceChoice::Ndarray,
        DeviceChoice::Wgpu,
        DeviceChoice::Cuda,
    ];

    /// Lower-case name, as accepted by `DeviceChoice::from_str`: `flex`, `ndarray`, `wgpu`,
    /// `cuda`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceChoice::Flex => "flex",
            DeviceChoice::Ndarray => "ndarray",
            DeviceChoice::Wgpu => "wgpu",
            DeviceChoice::Cuda => "cuda",
        }
    }

    /// Other names `DeviceChoice::from_str` accepts: `cpu` for flex, `gpu` for wgpu.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            DeviceChoice::Flex => &["cpu"],
            DeviceChoice::Wgpu => &["gpu"],
            DeviceChoice::Ndarray | DeviceChoice::Cuda => &[],
        }
    }

    /// The device, or an error naming the Cargo feature that would provide it. GPU devices
    /// run one tiny operation first, so a missing adapter or driver is an error here rather
    /// than a panic at the first tensor.
    pub fn device(self) -> Result<Device, Error> {
        match self {
            #[cfg(feature = "flex")]
            DeviceChoice::Flex => Ok(Device::flex()),
            #[cfg(not(feature = "flex"))]
            DeviceChoice::Flex => Err(not_built("flex", "flex")),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            DeviceChoice::Ndarray => Ok(Device::ndarray()),
            #[cfg(not(feature = "ndarray"))]
            DeviceChoice::Ndarray => Err(not_built("ndarray", "ndarray")),
            #[cfg(feature = "wgpu")]
            DeviceChoice::Wgpu => probe(
                Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
                "wgpu",
            ),
            #[cfg(not(feature = "wgpu"))]
            DeviceChoice::Wgpu => Err(not_built("wgpu", "wgpu")),
            #[cfg(feature = "cuda")]
            DeviceChoice::Cuda => probe(Device::cuda(0), "cuda"),
            #[cfg(not(feature = "cuda"))]
            DeviceChoice::Cuda => Err(not_built("cuda", "cuda")),
        }
    }
}

/// Runs one tiny operation on a GPU `device`: Burn panics on the first operation when no
/// adapter or driver is there, and this turns that into an error naming the backend.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn probe(device: Device, backend: &str) -> Result<Device, Error> {
    let probed = device.clone();
    let result = std::panic::catch_unwind(move || {
        burn::tensor::Tensor::<1>::zeros([1], &probed).into_data()
    });
    match result {
        Ok(_) => Ok(device),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown reason".to_string());
            Err(Error::Backend(format!(
                "no {backend} device is available (is a driver installed? for wgpu without a GPU, \
                 scripts/install_vulkan.sh): {reason}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_missing_backends_say_which_feature() {
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Flex);
        assert!("tpu".parse::<DeviceChoice>().is_err());
        #[cfg(not(feature = "cuda"))]
        assert_eq!(
            DeviceChoice::Cuda.device().unwrap_err().to_string(),
            "backend unavailable: device cuda is not compiled in: rebuild with `--features cuda`"
        );
    }
}
