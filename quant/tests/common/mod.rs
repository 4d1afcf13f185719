pub mod dequant;
