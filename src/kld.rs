//! `owl perplexity --kl-divergence --kl-divergence-base FILE -m MODEL`: a quant
//! against the saved log-probabilities of its base model, reported as
//! llama-perplexity reports it (a line per chunk, then PPL, KL divergence and
//! token-probability statistics).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use owl_engine::gguf::Gguf;
use owl_engine::models::transformer::Config;
use owl_engine::models::Model;
use owl_engine::perplexity::kld::{
    covariance, mean_and_uncertainty, median, percentile, BaseReader, KldSums,
};
use owl_engine::perplexity::{self, PplOptions};
use owl_engine::registry;
use owl_engine::tokenizer::Tokenizer;

use crate::perplexity::PerplexityArgs;

pub fn cmd_kl_divergence(a: PerplexityArgs) -> Result<ExitCode> {
    let base_path = a
        .kl_divergence_base
        .as_ref()
        .context("--kl-divergence needs --kl-divergence-base FILE")?;
    let f = std::fs::File::open(base_path).with_context(|| {
        format!(
            "cannot read the KL-divergence base file {}",
            base_path.display()
        )
    })?;
    let mut base = BaseReader::new(std::io::BufReader::new(f))?;
    let path = registry::resolve_model(&a.model, false)?;
    let gguf = Gguf::open(&path).with_context(|| format!("cannot open {}", a.model))?;
    let tok = Tokenizer::from_gguf(&gguf)
        .with_context(|| format!("cannot build the tokenizer of {}", a.model))?;
    let cfg = Config::from_gguf(&gguf).with_context(|| format!("cannot load {}", a.model))?;
    if base.n_vocab != cfg.n_vocab {
        bail!(
            "{} was written by a model with {} tokens, {} has {}: compare quants of the same model",
            base_path.display(),
            base.n_vocab,
            a.model,
            cfg.n_vocab
        );
    }
    if let Some(&t) = base.tokens.iter().find(|&&t| t as usize >= cfg.n_vocab) {
        bail!(
            "{} holds token {t}, outside the vocabulary of {}",
            base_path.display(),
            a.model
        );
    }
    let opts = PplOptions {
        n_ctx: base.n_ctx,
        n_batch: a.batch,
        n_chunks: Some(base.n_chunk),
    };
    if cfg.n_ctx_train > 0 && opts.n_ctx > cfg.n_ctx_train {
        bail!(
            "{} was written with chunks of {} tokens, over the training context of {} ({})",
            base_path.display(),
            opts.n_ctx,
            a.model,
            cfg.n_ctx_train
        );
    }
    let backend = owl_backends::open(&a.device, a.threads)?;
    let mut model = Model::load(&gguf, backend, opts.n_cells())
        .with_context(|| format!("cannot load {}", a.model))?;
    eprintln!(
        "kl-divergence: {} chunks of {} from {}, {}",
        base.n_chunk,
        base.n_ctx,
        base_path.display(),
        model.backend_name()
    );
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let (n_vocab, pool) = (cfg.n_vocab, model.thread_pool());
    let tokens = std::mem::take(&mut base.tokens);
    let mut k = KldSums::default();
    let mut rows = Vec::new();
    let mut out = std::io::stdout().lock();
    writeln!(out, "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p")?;
    perplexity::run_chunks(&mut model, &tokens, bos, &opts, base.n_chunk, |c| {
        base.next_chunk(&mut rows)?;
        k.add(&c, &rows, n_vocab, pool.as_deref());
        let _ = writeln!(out, "{}", chunk_line(c.index + 1, &k));
        let _ = out.flush();
        Ok(())
    })?;
    writeln!(out)?;
    if k.count < 100 {
        // llama-perplexity gives no statistics over so few tokens either.
        writeln!(out, "only {} tokens: too few for statistics", k.count)?;
        return Ok(ExitCode::SUCCESS);
    }
    write!(out, "{}", report(&mut k))?;
    Ok(ExitCode::SUCCESS)
}

fn chunk_line(chunk: usize, k: &KldSums) -> String {
    let lp = mean_and_uncertainty(k.sum_nll, k.sum_nll2, k.count);
    let lb = mean_and_uncertainty(k.sum_nll_base, k.sum_nll_base2, k.count);
    let cov = covariance(k.sum_nll, k.sum_nll_base, k.sum_nll_nll_base, k.count);
    let ratio_unc = (lp.1 * lp.1 + lb.1 * lb.1 - 2.0 * cov).sqrt();
    let kl = mean_and_uncertainty(k.sum_kld, k.sum_kld2, k.count);
    let mse = mean_and_uncertainty(k.sum_p_diff2, k.sum_p_diff4, k.count);
    let rms = mse.0.sqrt();
    let top = k.n_same_top as f64 / k.count as f64;
    let top_unc = (top * (1.0 - top) / (k.count as f64 - 1.0)).sqrt();
    format!(
        "{chunk:4}    {:9.4} ± {:9.4}    {:10.5} ± {:10.5}    {:10.5} ± {:10.5}    {:6.3} ± {:6.3} %    {:6.3} ± {:6.3} %",
        lp.0.exp(),
        lp.0.exp() * lp.1,
        lp.0 - lb.0,
        ratio_unc,
        kl.0,
        kl.1,
        100.0 * rms,
        100.0 * 0.5 / rms * mse.1,
        100.0 * top,
        100.0 * top_unc
    )
}

/// The final statistics, in llama-perplexity's words and order.
fn report(k: &mut KldSums) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    k.kld_values.sort_by(f32::total_cmp);
    k.p_diff_values.sort_by(f32::total_cmp);
    let lp = mean_and_uncertainty(k.sum_nll, k.sum_nll2, k.count);
    let lb = mean_and_uncertainty(k.sum_nll_base, k.sum_nll_base2, k.count);
    let cov = covariance(k.sum_nll, k.sum_nll_base, k.sum_nll_nll_base, k.count);
    let (ppl, ppl_unc) = (lp.0.exp(), lp.0.exp() * lp.1);
    let (pb, pb_unc) = (lb.0.exp(), lb.0.exp() * lb.1);
    let ratio = lp.0 - lb.0;
    let ratio_unc = (lp.1 * lp.1 + lb.1 * lb.1 - 2.0 * cov).sqrt();
    let _ = writeln!(s, "====== Perplexity statistics ======");
    let _ = writeln!(
        s,
        "Mean PPL(Q)                   : {ppl:10.6} ± {ppl_unc:10.6}"
    );
    let _ = writeln!(
        s,
        "Mean PPL(base)                : {pb:10.6} ± {pb_unc:10.6}"
    );
    let _ = writeln!(
        s,
        "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%",
        100.0 * cov / (lp.1 * lb.1)
    );
    let _ = writeln!(
        s,
        "Mean ln(PPL(Q)/PPL(base))     : {ratio:10.6} ± {ratio_unc:10.6}"
    );
    let _ = writeln!(
        s,
        "Mean PPL(Q)/PPL(base)         : {:10.6} ± {:10.6}",
        ratio.exp(),
        ratio.exp() * ratio_unc
    );
    let ppl_cov = ppl * pb * cov;
    let _ = writeln!(
        s,
        "Mean PPL(Q)-PPL(base)         : {:10.6} ± {:10.6}",
        ppl - pb,
        (ppl_unc * ppl_unc + pb_unc * pb_unc - 2.0 * ppl_cov).sqrt()
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "====== KL divergence statistics ======");
    let kl = mean_and_uncertainty(k.sum_kld, k.sum_kld2, k.count);
    let v = &k.kld_values;
    let _ = writeln!(s, "Mean    KLD: {:10.6} ± {:10.6}", kl.0, kl.1);
    let _ = writeln!(s, "Maximum KLD: {:10.6}", v[v.len() - 1]);
    for (label, f) in [
        ("99.9%", 0.999),
        ("99.0%", 0.99),
        ("95.0%", 0.95),
        ("90.0%", 0.9),
    ] {
        let _ = writeln!(s, "{label}   KLD: {:10.6}", percentile(v, f));
    }
    let _ = writeln!(s, "Median  KLD: {:10.6}", median(v));
    for (label, f) in [
        ("10.0%", 0.1),
        (" 5.0%", 0.05),
        (" 1.0%", 0.01),
        (" 0.1%", 0.001),
    ] {
        let _ = writeln!(s, "{label}   KLD: {:10.6}", percentile(v, f));
    }
    let _ = writeln!(s, "Minimum KLD: {:10.6}", v[0]);
    let _ = writeln!(s);
    let _ = writeln!(s, "====== Token probability statistics ======");
    let pd = mean_and_uncertainty(k.sum_p_diff, k.sum_p_diff2, k.count);
    let v = &k.p_diff_values;
    let _ = writeln!(
        s,
        "Mean    Δp: {:6.3} ± {:5.3} %",
        100.0 * pd.0,
        100.0 * pd.1
    );
    let _ = writeln!(s, "Maximum Δp: {:6.3}%", 100.0 * v[v.len() - 1]);
    for (label, f) in [
        ("99.9%", 0.999),
        ("99.0%", 0.99),
        ("95.0%", 0.95),
        ("90.0%", 0.9),
        ("75.0%", 0.75),
    ] {
        let _ = writeln!(s, "{label}   Δp: {:6.3}%", 100.0 * percentile(v, f));
    }
    let _ = writeln!(s, "Median  Δp: {:6.3}%", 100.0 * median(v));
    for (label, f) in [
        ("25.0%", 0.25),
        ("10.0%", 0.1),
        (" 5.0%", 0.05),
        (" 1.0%", 0.01),
        (" 0.1%", 0.001),
    ] {
        let _ = writeln!(s, "{label}   Δp: {:6.3}%", 100.0 * percentile(v, f));
    }
    let _ = writeln!(s, "Minimum Δp: {:6.3}%", 100.0 * v[0]);
    let mse = mean_and_uncertainty(k.sum_p_diff2, k.sum_p_diff4, k.count);
    let rms = mse.0.sqrt();
    let _ = writeln!(
        s,
        "RMS Δp    : {:6.3} ± {:5.3} %",
        100.0 * rms,
        100.0 * 0.5 / rms * mse.1
    );
    let top = k.n_same_top as f64 / k.count as f64;
    let _ = writeln!(
        s,
        "Same top p: {:6.3} ± {:5.3} %",
        100.0 * top,
        100.0 * (top * (1.0 - top) / (k.count as f64 - 1.0)).sqrt()
    );
    s
}
