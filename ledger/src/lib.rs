//! owl-ledger: what tokens cost. It knows tokens, seconds and dollars, nothing of
//! models or HTTP: the API price table ([`prices`]), the cost of owning this machine
//! ([`config`]) and the arithmetic between them ([`arith`]); one [`Record`] per request
//! served ([`record`]), appended to the ledger on disk ([`store`]) and summed ([`report`]).

pub mod arith;
pub mod config;
pub mod prices;
pub mod record;
pub mod report;
pub mod store;

pub use arith::{breakeven, format_tokens, local_per_1m, BreakEven};
pub use config::{CostConfig, Origin, RouteTable, Sourced, UpstreamTable};
pub use prices::{Price, PriceTable};
pub use record::{now_unix, Charger, Pricer, Record, Routing, Served};
pub use report::{GroupBy, Totals};
pub use store::Ledger;

use std::path::PathBuf;

/// Everything that can go wrong reading prices or the cost config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bad TOML, an unknown field, a missing field or a wrong type.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A value out of range (a negative price, an input share above 1, ...).
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    #[error("unknown model {model:?} in the price table ({file}); known: {known}")]
    UnknownModel {
        model: String,
        file: String,
        known: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// 1-based line and column of byte offset `at` in `src`.
pub(crate) fn line_col(src: &str, at: usize) -> (usize, usize) {
    let at = at.min(src.len());
    let before = &src[..at];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let column = before.rfind('\n').map_or(at, |nl| at - nl - 1) + 1;
    (line, column)
}

/// A toml error as [`Error::Parse`], its position taken from the error's span.
pub(crate) fn parse_error(file: &str, src: &str, e: &toml::de::Error) -> Error {
    let (line, column) = e.span().map_or((1, 1), |s| line_col(src, s.start));
    Error::Parse {
        file: file.to_string(),
        line,
        column,
        message: e.message().trim_end().to_string(),
    }
}
