//! The team's rotation table applied to secret names: which category a name makes clear. The first rule that
//! matches wins, so the specific infrastructure names beat the suffix rules and the stricter or more specific
//! rules come first. A name no rule matches gets no category: guessing a period would be worse than saying so.

use crate::api::RotationCategory;

/// Names of infrastructure credentials whose suffix would otherwise make them API keys.
const INFRASTRUCTURE_NAMES: [&str; 2] = ["PULUMI_ACCESS_TOKEN", "LAMBDA_API_KEY"];

/// Payment processors: their keys move money, so they are high risk whatever their suffix.
const PAYMENT_PREFIXES: [&str; 4] = ["STRIPE_", "PAYPAL_", "BRAINTREE_", "ADYEN_"];

/// Name segments that mark payment-card or personal data.
const HIGH_RISK_SEGMENTS: [&str; 2] = ["CARD", "PII"];

/// Low-risk collaboration and CRM integrations.
const INTEGRATION_PREFIXES: [&str; 12] = [
    "SLACK_",
    "LINEAR_",
    "ASANA_",
    "HUBSPOT_",
    "NOTION_",
    "ZAPIER_",
    "JIRA_",
    "TRELLO_",
    "INTERCOM_",
    "ZENDESK_",
    "DISCORD_",
    "AIRTABLE_",
];

/// A category the name makes clear, and the rule that said so (for the import report and the README table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inferred {
    pub category: RotationCategory,
    pub rule: &'static str,
}

/// The category of a secret named `name` (compared case-insensitively), or None when the name does not make
/// it clear.
pub fn infer(name: &str) -> Option<Inferred> {
    let upper = name.to_ascii_uppercase();
    let n = upper.as_str();
    let hit = |category, rule| Some(Inferred { category, rule });
    let segments = || n.split('_');
    let ends = |suffix: &str| n == &suffix[1..] || n.ends_with(suffix);

    if INFRASTRUCTURE_NAMES.contains(&n) {
        return hit(RotationCategory::Infrastructure, "infrastructure credential by name");
    }
    if ends("_SSH_PRIVATE_KEY") {
        return hit(RotationCategory::Infrastructure, "name ends in _SSH_PRIVATE_KEY");
    }
    if PAYMENT_PREFIXES.iter().any(|p| n.starts_with(p)) {
        return hit(RotationCategory::HighRisk, "payment provider prefix");
    }
    if segments().any(|s| HIGH_RISK_SEGMENTS.contains(&s)) {
        return hit(RotationCategory::HighRisk, "name has a _CARD_ or _PII_ part");
    }
    if INTEGRATION_PREFIXES.iter().any(|p| n.starts_with(p)) {
        return hit(RotationCategory::LowRisk, "low-risk integration prefix");
    }
    if ends("_PASSWORD") {
        return hit(RotationCategory::Database, "name ends in _PASSWORD");
    }
    if ends("_API_KEY") {
        return hit(RotationCategory::ApiKey, "name ends in _API_KEY");
    }
    if ends("_TOKEN") {
        return hit(RotationCategory::ApiKey, "name ends in _TOKEN");
    }
    None
}

/// The category's name as the API writes it.
pub fn name(c: RotationCategory) -> &'static str {
    match c {
        RotationCategory::HighRisk => "highRisk",
        RotationCategory::Database => "database",
        RotationCategory::ApiKey => "apiKey",
        RotationCategory::LowRisk => "lowRisk",
        RotationCategory::Infrastructure => "infrastructure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RotationCategory::*;

    fn cat(name: &str) -> Option<RotationCategory> {
        infer(name).map(|i| i.category)
    }

    #[test]
    fn the_team_examples() {
        // The examples in the team's guide.
        assert_eq!(cat("OPENAI_API_KEY"), Some(ApiKey));
        assert_eq!(cat("SNOWFLAKE_PASSWORD"), Some(Database));
        assert_eq!(cat("LAMBDA_SSH_PRIVATE_KEY"), Some(Infrastructure));
        assert_eq!(cat("HUBSPOT_API_KEY"), Some(LowRisk));
    }

    #[test]
    fn every_rule() {
        for (name, want) in [
            ("ANTHROPIC_API_KEY", Some(ApiKey)),
            ("GITHUB_TOKEN", Some(ApiKey)),
            ("POSTGRES_PASSWORD", Some(Database)),
            ("PASSWORD", Some(Database)),
            ("PULUMI_ACCESS_TOKEN", Some(Infrastructure)),
            ("LAMBDA_API_KEY", Some(Infrastructure)),
            ("DEPLOY_SSH_PRIVATE_KEY", Some(Infrastructure)),
            ("SLACK_BOT_TOKEN", Some(LowRisk)),
            ("LINEAR_API_KEY", Some(LowRisk)),
            ("ASANA_ACCESS_TOKEN", Some(LowRisk)),
            ("NOTION_SECRET", Some(LowRisk)),
            ("ZAPIER_WEBHOOK_URL", Some(LowRisk)),
            ("STRIPE_SECRET_KEY", Some(HighRisk)),
            ("PAYPAL_CLIENT_SECRET", Some(HighRisk)),
            ("STRIPE_API_KEY", Some(HighRisk)),
            ("CUSTOMER_CARD_ENCRYPTION_KEY", Some(HighRisk)),
            ("CRM_PII_SALT", Some(HighRisk)),
            ("REDIS_URL", None),
            ("SESSION_SECRET", None),
            ("DISCARD_TOKEN_HELPER_X", None),
            // A part that merely contains CARD is not a card.
            ("DISCARD_QUEUE_KEY", None),
        ] {
            assert_eq!(cat(name), want, "{name}");
        }
    }

    #[test]
    fn specific_names_beat_suffixes_and_case_does_not_matter() {
        assert_eq!(cat("pulumi_access_token"), Some(Infrastructure));
        assert_eq!(cat("openai_api_key"), Some(ApiKey));
        assert_eq!(
            infer("LAMBDA_API_KEY").unwrap().rule,
            "infrastructure credential by name"
        );
        // Lookalikes of the specific names fall back to the suffix rules.
        assert_eq!(cat("LAMBDA_API_KEY_2"), None);
        assert_eq!(cat("MY_LAMBDA_API_KEY"), Some(ApiKey));
    }
}
