//! Showing transaction events: progress bars on a terminal, plain lines otherwise (logs, CI,
//! scripts), so output stays readable in both.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use layerd_interfaces::EventKind;

pub struct Renderer {
    bar: Option<ProgressBar>,
}

impl Renderer {
    pub fn new() -> Self {
        Renderer { bar: std::io::stdout().is_terminal().then(ProgressBar::hidden) }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(b) if !b.is_hidden() => b.println(text),
            _ => println!("{text}"),
        }
    }

    fn show_bar(&mut self, style: &str, len: u64, pos: u64, msg: &str) {
        if let Some(b) = &mut self.bar {
            if b.is_hidden() {
                *b = ProgressBar::new(len);
            }
            if let Ok(s) = ProgressStyle::with_template(style) {
                b.set_style(s);
            }
            b.set_length(len);
            b.set_position(pos);
            b.set_message(msg.to_string());
        }
    }

    pub fn event(&mut self, kind: &EventKind) {
        match kind {
            EventKind::Message(t) => self.line(t),
            EventKind::TaskBegin(t) => {
                if self.bar.is_some() {
                    self.show_bar("{spinner} {msg}", 0, 0, t);
                    if let Some(b) = &self.bar {
                        b.enable_steady_tick(Duration::from_millis(100));
                    }
                } else {
                    println!("{t}...");
                }
            }
            EventKind::TaskEnd(t) => {
                if let Some(b) = &self.bar {
                    b.disable_steady_tick();
                }
                self.line(&format!("{t}... done"));
            }
            EventKind::Percent { text, percent } => {
                if self.bar.is_some() {
                    self.show_bar("{msg} [{bar:30}] {pos}%", 100, u64::from(*percent), text);
                } else if *percent == 100 {
                    println!("{text}: 100%");
                }
            }
            EventKind::Progress(p) => {
                if self.bar.is_some() {
                    self.show_bar(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
                        p.bytes_total.max(p.bytes_done),
                        p.bytes_done,
                        &format!("{} ({}/{})", p.text, p.items_done, p.items_total),
                    );
                } else if p.items_total > 0 && p.items_done == p.items_total {
                    println!("{}: {} items, {} bytes", p.text, p.items_done, p.bytes_done);
                }
            }
            EventKind::Finished(_) | EventKind::Unknown(_) => {}
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
