//! The wg-quick configuration format plus ringtun's own `[Interface]` keys.
