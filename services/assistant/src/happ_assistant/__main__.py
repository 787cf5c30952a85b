from happ_assistant.app import create_app
from happ_assistant.settings import AssistantServiceSettings
from happ_common.service_runtime import run_service

run_service("assistant", AssistantServiceSettings, create_app)
