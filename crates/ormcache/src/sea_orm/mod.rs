//! SeaORM integration (feature `sea-orm`). Inside this module, the SeaORM crate is `::sea_orm`.
