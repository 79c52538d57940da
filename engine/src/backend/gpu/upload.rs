//! Weights onto the device: a tensor in its GGUF block layout (vectors as f32), split by rows
//! over buffers of at most one storage binding, or several tensors stored one after another in
//! one buffer ([`crate::backend::Backend::weights`]) so that one dispatch multiplies them all.

use std::sync::Arc;

use super::super::BackendError;
use super::super::host::weight_view;
use super::kernels::quant_fn;
use super::{GpuBackend, GpuWeight, NAME, Part, device_error};
use crate::gguf::{GgufFile, TensorInfo};
use crate::quant::GgmlType;

impl GpuBackend {
    /// [`crate::backend::Backend::weight`].
    pub(super) fn upload_weight(
        &self,
        file: &Arc<GgufFile>,
        info: &TensorInfo,
    ) -> Result<GpuWeight, BackendError> {
        let unsupported = || BackendError::UnsupportedType {
            backend: NAME,
            tensor: info.name.clone(),
            ty: info.ty,
        };
        // The host view checks rank and type and finds the bytes.
        let view = weight_view(NAME, file, info)?;
        let (rows, cols) = (view.rows, view.cols);
        let vector = rows == 1;
        let ty = if vector { GgmlType::F32 } else { info.ty };
        let f = quant_fn(ty).ok_or_else(unsupported)?;
        if !cols.is_multiple_of(8) {
            return Err(device_error(format!(
                "tensor '{}' has rows of {cols} values; the kernels take multiples of 8",
                info.name
            )));
        }
        let kernels = self.ctx.kernels.quantized(&self.ctx.device, f);
        if vector {
            let data = view.vector();
            let buf = self.upload(&info.name, bytemuck::cast_slice(&data));
            return Ok(GpuWeight {
                name: info.name.clone(),
                ty,
                rows,
                cols,
                row_bytes: cols * 4,
                parts: vec![Part {
                    buf,
                    row0: 0,
                    rows,
                    skip: 0,
                }],
                kernels,
            });
        }
        let row_bytes = view.row_bytes;
        let bytes = view.bytes();
        let max = usize::try_from(self.ctx.max_part).unwrap_or(usize::MAX);
        let per_part = (max / row_bytes).max(1);
        if row_bytes > max {
            return Err(device_error(format!(
                "a row of tensor '{}' ({row_bytes} bytes) exceeds a storage binding on {}",
                info.name, self.ctx.info.name
            )));
        }
        let parts = (0..rows)
            .step_by(per_part)
            .map(|row0| {
                let n = per_part.min(rows - row0);
                let buf = self.upload(&info.name, &bytes[row0 * row_bytes..][..n * row_bytes]);
                Part {
                    buf,
                    row0,
                    rows: n,
                    skip: 0,
                }
            })
            .collect();
        Ok(GpuWeight {
            name: info.name.clone(),
            ty,
            rows,
            cols,
            row_bytes,
            parts,
            kernels,
        })
    }

    /// `infos` in one buffer, one after another, where they are matrices of one format and row
    /// length that fit one storage binding together (else `None`): the matmuls of a layer's Q, K
    /// and V, or of its gate and up projections, then take one dispatch.
    pub(super) fn stored_together(
        &self,
        file: &Arc<GgufFile>,
        infos: &[&TensorInfo],
    ) -> Result<Option<Vec<GpuWeight>>, BackendError> {
        let Some(first) = infos.first() else {
            return Ok(None);
        };
        let mut views = Vec::with_capacity(infos.len());
        for info in infos {
            views.push(weight_view(NAME, file, info)?);
        }
        let (cols, row_bytes) = (views[0].cols, views[0].row_bytes);
        let total: usize = views.iter().map(|v| v.bytes().len()).sum();
        let alike = infos.iter().zip(&views).all(|(info, v)| {
            info.ty == first.ty && v.rows > 1 && v.cols == cols && v.row_bytes == row_bytes
        });
        let max = usize::try_from(self.ctx.max_part).unwrap_or(usize::MAX);
        let Some(f) = quant_fn(first.ty) else {
            return Ok(None);
        };
        if infos.len() < 2 || !alike || total > max || !cols.is_multiple_of(8) {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(total);
        for v in &views {
            bytes.extend_from_slice(v.bytes());
        }
        let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        let buf = self.upload(&names.join(" + "), &bytes);
        let kernels = self.ctx.kernels.quantized(&self.ctx.device, f);
        let mut skip = 0;
        let weights = infos
            .iter()
            .zip(&views)
            .map(|(info, v)| {
                let part = Part {
                    buf: buf.clone(),
                    row0: 0,
                    rows: v.rows,
                    skip,
                };
                skip += v.rows;
                GpuWeight {
                    name: info.name.clone(),
                    ty: info.ty,
                    rows: v.rows,
                    cols,
                    row_bytes,
                    parts: vec![part],
                    kernels: kernels.clone(),
                }
            })
            .collect();
        Ok(Some(weights))
    }
}
