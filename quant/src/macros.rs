//! The type-dispatch macro.

/// Calls `$body` with the type alias `$B` set to the block struct of `$ty`.
#[macro_export]
macro_rules! with_block {
    ($ty:expr, $B:ident => $body:expr) => {
        match $ty {
            $crate::GgmlType::F32 => {
                type $B = $crate::BlockF32;
                $body
            }
            $crate::GgmlType::F16 => {
                type $B = $crate::BlockF16;
                $body
            }
            $crate::GgmlType::BF16 => {
                type $B = $crate::BlockBF16;
                $body
            }
            $crate::GgmlType::Q4_0 => {
                type $B = $crate::BlockQ4_0;
                $body
            }
            $crate::GgmlType::Q4_1 => {
                type $B = $crate::BlockQ4_1;
                $body
            }
            $crate::GgmlType::Q5_0 => {
                type $B = $crate::BlockQ5_0;
                $body
            }
            $crate::GgmlType::Q5_1 => {
                type $B = $crate::BlockQ5_1;
                $body
            }
            $crate::GgmlType::Q8_0 => {
                type $B = $crate::BlockQ8_0;
                $body
            }
            $crate::GgmlType::Q8_1 => {
                type $B = $crate::BlockQ8_1;
                $body
            }
            $crate::GgmlType::Q2_K => {
                type $B = $crate::BlockQ2K;
                $body
            }
            $crate::GgmlType::Q3_K => {
                type $B = $crate::BlockQ3K;
                $body
            }
            $crate::GgmlType::Q4_K => {
                type $B = $crate::BlockQ4K;
                $body
            }
            $crate::GgmlType::Q5_K => {
                type $B = $crate::BlockQ5K;
                $body
            }
            $crate::GgmlType::Q6_K => {
                type $B = $crate::BlockQ6K;
                $body
            }
            $crate::GgmlType::Q8_K => {
                type $B = $crate::BlockQ8K;
                $body
            }
            $crate::GgmlType::IQ4_NL => {
                type $B = $crate::BlockIQ4NL;
                $body
            }
            $crate::GgmlType::IQ4_XS => {
                type $B = $crate::BlockIQ4XS;
                $body
            }
        }
    };
}
