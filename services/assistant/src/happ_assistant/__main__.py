from happ_assistant.app import create_app
from happ_assistant.settings import AssistantServiceSettings
from happ_common.service_runtime import serve
from happ_common.settings import HappSettings

settings = AssistantServiceSettings()
serve(
    create_app(settings),
    host=settings.host,
    port=settings.port,
    service="assistant",
    log_level=HappSettings().log_level,
)
