"""The store contract: where stores live, their schema, the region writer, the catalog.

See docs/store-format.md for the format itself.
"""

from store._cache import CACHE_ENV, cache_root
from store._catalog import default_catalog_path, load_catalog, resolve_location
from store._consolidated import consolidate, stale_metadata
from store._faults import reporting_write_faults, write_fault
from store._guard import check_ours_or_empty, is_our_store
from store._integrity import Damage, check_intact, damage
from store._items import (
    CAPTURES_GROUP,
    ENCODINGS_GROUP,
    HYPERCUBES_GROUP,
    ITEM_GROUPS,
    complete_items,
    effective_exponent,
    item_path,
    labels_in,
    open_item,
    prepare_group,
    remove_items,
    write_item,
)
from store._lease import LEASE_DIR, Lease, LeaseError, LeaseRecord, live_leases, slot_key
from store._location import StoreLocation
from store._options import OneLineParser, check_output_path, parse_storage_options
from store._schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    STATS_GROUP,
    UNIT_COMMITTED,
    UNIT_EMPTY,
    UNIT_TOKENIZED,
    ModelSlot,
    StatsLayout,
)
from store._staging import Staging
from store._stats_store import (
    StoredStats,
    WriteSession,
    check_compatible,
    finish,
    open_session,
    structure_lease,
)
from store._units import (
    Unit,
    claim_unit,
    committed_prefix,
    plan_units,
    publish_prefix,
    unit_state,
    unit_states,
)
from store._validate import validate_stats, validate_store
from store._writer import StatsBlock, UnitWriter, write_unit_tokens
from store.errors import (
    ActivationStoreError,
    CatalogError,
    ConfigError,
    ContractError,
    InputError,
    StoreLocationError,
    StoreMismatchError,
)

__all__ = [
    "CACHE_ENV",
    "CAPTURES_GROUP",
    "ENCODINGS_GROUP",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "HYPERCUBES_GROUP",
    "ITEM_GROUPS",
    "LEASE_DIR",
    "STATS_GROUP",
    "UNIT_COMMITTED",
    "UNIT_EMPTY",
    "UNIT_TOKENIZED",
    "ActivationStoreError",
    "CatalogError",
    "ConfigError",
    "ContractError",
    "Damage",
    "InputError",
    "Lease",
    "LeaseError",
    "LeaseRecord",
    "ModelSlot",
    "OneLineParser",
    "Staging",
    "StatsBlock",
    "StatsLayout",
    "StoreLocation",
    "StoreLocationError",
    "StoreMismatchError",
    "StoredStats",
    "Unit",
    "UnitWriter",
    "WriteSession",
    "cache_root",
    "check_compatible",
    "check_intact",
    "check_ours_or_empty",
    "check_output_path",
    "claim_unit",
    "committed_prefix",
    "complete_items",
    "consolidate",
    "damage",
    "default_catalog_path",
    "effective_exponent",
    "finish",
    "is_our_store",
    "item_path",
    "labels_in",
    "live_leases",
    "load_catalog",
    "open_item",
    "open_session",
    "parse_storage_options",
    "plan_units",
    "prepare_group",
    "publish_prefix",
    "remove_items",
    "reporting_write_faults",
    "resolve_location",
    "slot_key",
    "stale_metadata",
    "structure_lease",
    "unit_state",
    "unit_states",
    "validate_stats",
    "validate_store",
    "write_fault",
    "write_item",
    "write_unit_tokens",
]
