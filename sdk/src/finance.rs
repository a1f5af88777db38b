//! Typed events of the personal-finance app: the names and properties its
//! dashboards count, so call sites cannot misspell them. Each event exists as an
//! [`Event`] constructor (to set a timestamp) and as a [`Tracker`] method.

use std::fmt;

use crate::event::Event;
use crate::tracker::Tracker;

/// Event names of the finance app.
pub mod names {
    /// The user recorded an expense.
    pub const EXPENSE_LOGGED: &str = "expense_logged";
    /// The user changed an expense recorded earlier.
    pub const EXPENSE_EDITED: &str = "expense_edited";
    /// The user asked for a report (monthly summary, by category, …).
    pub const REPORT_REQUESTED: &str = "report_requested";
    /// The user installed the progressive web app.
    pub const PWA_INSTALLED: &str = "pwa_installed";
    /// The original app's own name for [`PWA_INSTALLED`]: `Event::install_pwa`
    /// and `Tracker::install_pwa` send `pwa_installed` under it, so the dashboards
    /// count one event. (A team that wants its own names kept as they are tracks
    /// them with `Tracker::track` and lists them in the aggregator's
    /// `--active-events`.)
    pub const INSTALL_PWA: &str = "install_pwa";
    /// The user joined a savings challenge.
    pub const CHALLENGE_STARTED: &str = "challenge_started";
}

/// Property names of the finance app's events.
pub mod properties {
    /// Amount of an expense, a number.
    pub const AMOUNT: &str = "amount";
    /// Spending category of an expense (`groceries`, `transport`, …).
    pub const CATEGORY: &str = "category";
    /// The app's id of an expense.
    pub const EXPENSE_ID: &str = "expense_id";
    /// Kind of report (`monthly`, `by_category`, …).
    pub const REPORT_TYPE: &str = "report_type";
    /// Which challenge, by id or name.
    pub const CHALLENGE_ID: &str = "challenge_id";
}

/// Where the user logged an expense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A chat-bot in a messenger.
    Messenger,
    /// The web form.
    Form,
    /// The installed progressive web app.
    Pwa,
}

impl Source {
    /// Every source, for iteration.
    pub const ALL: [Source; 3] = [Source::Messenger, Source::Form, Source::Pwa];

    /// `messenger`, `form` or `pwa`: the value of the `source` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Messenger => "messenger",
            Source::Form => "form",
            Source::Pwa => "pwa",
        }
    }
}

impl AsRef<str> for Source {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Event {
    /// `expense_logged` with its amount, category and source.
    pub fn expense_logged(user_id: &str, amount: f64, category: &str, source: Source) -> Event {
        Event::new(names::EXPENSE_LOGGED)
            .user(user_id)
            .attr(properties::AMOUNT, amount)
            .attr(properties::CATEGORY, category)
            .source(source)
    }

    /// `expense_edited` of the expense `expense_id`.
    pub fn expense_edited(user_id: &str, expense_id: &str) -> Event {
        Event::new(names::EXPENSE_EDITED)
            .user(user_id)
            .attr(properties::EXPENSE_ID, expense_id)
    }

    /// `report_requested` of the kind `report_type`.
    pub fn report_requested(user_id: &str, report_type: &str) -> Event {
        Event::new(names::REPORT_REQUESTED)
            .user(user_id)
            .attr(properties::REPORT_TYPE, report_type)
    }

    /// `pwa_installed`; its source is always `pwa`.
    pub fn pwa_installed(user_id: &str) -> Event {
        Event::new(names::PWA_INSTALLED)
            .user(user_id)
            .source(Source::Pwa)
    }

    /// The original app's `install_pwa`: the same event as
    /// [`pwa_installed`](Self::pwa_installed), sent as `pwa_installed`.
    pub fn install_pwa(user_id: &str) -> Event {
        Event::pwa_installed(user_id)
    }

    /// `challenge_started` of the challenge `challenge_id` (an id or a name).
    pub fn challenge_started(user_id: &str, challenge_id: &str) -> Event {
        Event::new(names::CHALLENGE_STARTED)
            .user(user_id)
            .attr(properties::CHALLENGE_ID, challenge_id)
    }
}

impl Tracker {
    /// Tracks [`Event::expense_logged`] now.
    pub fn expense_logged(&self, user_id: &str, amount: f64, category: &str, source: Source) {
        self.track_event(Event::expense_logged(user_id, amount, category, source));
    }

    /// Tracks [`Event::expense_edited`] now.
    pub fn expense_edited(&self, user_id: &str, expense_id: &str) {
        self.track_event(Event::expense_edited(user_id, expense_id));
    }

    /// Tracks [`Event::report_requested`] now.
    pub fn report_requested(&self, user_id: &str, report_type: &str) {
        self.track_event(Event::report_requested(user_id, report_type));
    }

    /// Tracks [`Event::pwa_installed`] now.
    pub fn pwa_installed(&self, user_id: &str) {
        self.track_event(Event::pwa_installed(user_id));
    }

    /// Tracks [`Event::install_pwa`] (sent as `pwa_installed`) now.
    pub fn install_pwa(&self, user_id: &str) {
        self.track_event(Event::install_pwa(user_id));
    }

    /// Tracks [`Event::challenge_started`] now.
    pub fn challenge_started(&self, user_id: &str, challenge_id: &str) {
        self.track_event(Event::challenge_started(user_id, challenge_id));
    }
}

#[cfg(test)]
mod tests {
    use crate::event::AttributeValue;

    use super::*;

    #[test]
    fn sources_have_contract_names() {
        let names: Vec<_> = Source::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["messenger", "form", "pwa"]);
    }

    #[test]
    fn constructors_carry_name_user_and_properties() {
        let event = Event::expense_logged("u1", 12.5, "groceries", Source::Messenger);
        assert_eq!(event.name(), names::EXPENSE_LOGGED);
        assert!(event.has_user());
        assert_eq!(event.source.as_deref(), Some("messenger"));
        assert_eq!(
            event.attributes,
            [
                (properties::AMOUNT.to_owned(), AttributeValue::Float(12.5)),
                (
                    properties::CATEGORY.to_owned(),
                    AttributeValue::from("groceries")
                ),
            ]
        );
        let named: Vec<_> = [
            Event::expense_edited("u1", "e-1"),
            Event::report_requested("u1", "monthly"),
            Event::pwa_installed("u1"),
            Event::install_pwa("u1"),
            Event::challenge_started("u1", "no-coffee-week"),
        ]
        .iter()
        .map(|e| e.name().to_owned())
        .collect();
        assert_eq!(
            named,
            [
                names::EXPENSE_EDITED,
                names::REPORT_REQUESTED,
                names::PWA_INSTALLED,
                names::PWA_INSTALLED,
                names::CHALLENGE_STARTED
            ]
        );
    }
}
