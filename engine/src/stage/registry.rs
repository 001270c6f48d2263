//! The table of stage kinds a binary knows. The engine brings `command` and `fetch`; the binary adds the
//! ML kinds from `distill-stages` and `report` from `distill-reports`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::base::Stage;
use super::command::CommandStage;
use super::fetch::FetchStage;

#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn Stage>>,
}

impl Registry {
    /// The kinds the engine itself provides.
    pub fn builtin() -> Self {
        let mut r = Self::default();
        r.add(Arc::new(CommandStage));
        r.add(Arc::new(FetchStage));
        r
    }

    pub fn add(&mut self, kind: Arc<dyn Stage>) -> &mut Self {
        self.kinds.insert(kind.kind(), kind);
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Stage>> {
        self.kinds.get(kind)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Stage>> {
        self.kinds.values()
    }
}
