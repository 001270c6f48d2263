//! Chart data as the report and `report.json` carry it; the SVG is drawn from it on render.

use serde::Serialize;

use crate::svg::{LineChart, Series, bar_chart};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ChartData {
    /// Unique in the page: the render step maps ids to drawn SVGs.
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    #[serde(flatten)]
    pub kind: ChartKind,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChartKind {
    Line { series: Vec<Series> },
    /// (label, value, group); `groups` names the groups for the legend.
    Bars { bars: Vec<(String, f64, usize)>, groups: Vec<String> },
}

impl ChartData {
    pub fn svg(&self) -> String {
        match &self.kind {
            ChartKind::Line { series } => LineChart {
                title: &self.title,
                x_label: &self.x_label,
                y_label: &self.y_label,
                series,
            }
            .render(),
            ChartKind::Bars { bars, groups } => {
                let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
                bar_chart(&self.title, &self.x_label, bars, &groups)
            }
        }
    }
}
