//! Tensors as they cross the WIT boundary.

/// The element type of a tensor crossing the WIT boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementType {
    /// 32-bit float.
    F32,
    /// 64-bit signed integer.
    I64,
}

/// A tensor's values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit integers.
    I64(Vec<i64>),
}

#[cfg_attr(not(feature = "onnx"), allow(dead_code))]
impl TensorData {
    pub(super) fn len(&self) -> usize {
        match self {
            TensorData::F32(values) => values.len(),
            TensorData::I64(values) => values.len(),
        }
    }

    pub(super) fn element_type(&self) -> ElementType {
        match self {
            TensorData::F32(_) => ElementType::F32,
            TensorData::I64(_) => ElementType::I64,
        }
    }
}

/// A named, shaped tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The model's name for the input or output.
    pub name: String,
    /// The size of each dimension.
    pub shape: Vec<usize>,
    /// The values.
    pub data: TensorData,
}
