"""rag_core: tenant-isolated retrieval over PostgreSQL + pgvector, and what surrounds it.

No Prefect imports in this package: flows in ``flows/`` orchestrate it.
"""

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.config import Settings, get_settings
from rag_core.errors import RagCoreError

__all__ = ["RagCoreError", "Settings", "TenantId", "get_settings", "parse_tenant_id"]
__version__ = "0.1.0"
