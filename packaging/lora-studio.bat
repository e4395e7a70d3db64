@echo off
rem LoRA Studio launcher for Windows. Double-click it to open the app, or run
rem   lora-studio.bat train my-preset.toml
rem from a console. It uses the .venv folder made during install (see WINDOWS.md).
setlocal
rem UTF-8 everywhere: captions, presets and folder names with accents.
set "PYTHONUTF8=1"
chcp 65001 >nul
set "ROOT=%~dp0.."
set "PY=%ROOT%\.venv\Scripts\python.exe"
if not exist "%PY%" (
    echo LoRA Studio: no Python environment at "%ROOT%\.venv".
    echo Follow packaging\WINDOWS.md to create it, then start this file again.
    pause
    exit /b 1
)
"%PY%" -m lora_studio %*
set "CODE=%ERRORLEVEL%"
rem Keep the window open after a failure when started by double-click, so the message can be read.
if not "%CODE%"=="0" if "%~1"=="" pause
exit /b %CODE%
