"""Every model, imported in one place so the metadata (and Alembic) sees the whole schema."""
from .auth.client_models import ApiClient, ClientSecret  # noqa: F401
from .auth.models import ApiToken, User  # noqa: F401
from .events.models import Attachment, Category, Event, EventHistory  # noqa: F401
from .hotline.models import CategoryMapping, HotlineFeedback, HotlinePetition, SeenWebhook  # noqa: F401
from .inbox.models import Notification  # noqa: F401
from .infra.state import ServiceState  # noqa: F401
from .open311.models import Open311Attribute, Open311Request  # noqa: F401
from .outbox.models import OutboxMessage  # noqa: F401
from .privacy.pii import PiiAccess  # noqa: F401
from .sla.models import CalendarDay, CalendarRow, CalendarYear, Clock, Escalation, Policy  # noqa: F401
from .territory.models import Unit  # noqa: F401
