import Foundation

// `etcdctl completion <shell>`: cobra's default completion command (its help texts, its `--no-descriptions` flag,
// its errors), printing scripts of our own that drive `etcdctl __complete` with cobra's protocol.

func completionCommand(root name: String) -> CommandSpec {
    let completion = CommandSpec("completion", "Generate the autocompletion script for the specified shell", long: """
        Generate the autocompletion script for \(name) for the specified shell.
        See each sub-command's help for details on how to use the generated script.

        """)
    completion.completeArguments = Completion.noFiles
    let noDescriptions = FlagSpec.bool("no-descriptions", nil, false, "disable completion descriptions")
    func shell(_ shell: String, long: String, script: @escaping (_ program: String, _ descriptions: Bool) -> String) -> CommandSpec {
        let command = CommandSpec(shell, "Generate the autocompletion script for \(shell)", long: long, flags: [noDescriptions])
        command.run = { [unowned command] invocation in
            // cobra's NoArgs, reported as cobra reports a failed Args check (as a flag error is).
            if let extra = invocation.args.first {
                let message = "unknown command \(goQuote(extra)) for \(goQuote(command.path))"
                writeErr("Error: \(message)\n")
                out(command.usage())
                writeErr("\n")
                exitWithError(ExitCode.error, message)
            }
            out(script(name, !invocation.bool("no-descriptions")))
        }
        command.completeArguments = Completion.noFiles
        return command
    }
    let bash = shell("bash", long: """
        Generate the autocompletion script for the bash shell.

        This script depends on the 'bash-completion' package.
        If it is not installed already, you can install it via your OS's package manager.

        To load completions in your current shell session:

        \tsource <(\(name) completion bash)

        To load completions for every new session, execute once:

        #### Linux:

        \t\(name) completion bash > /etc/bash_completion.d/\(name)

        #### macOS:

        \t\(name) completion bash > $(brew --prefix)/etc/bash_completion.d/\(name)

        You will need to start a new shell for this setup to take effect.

        """, script: bashCompletionScript)
    bash.flagsInUseLine = false
    completion.add(
        bash,
        shell("fish", long: """
            Generate the autocompletion script for the fish shell.

            To load completions in your current shell session:

            \t\(name) completion fish | source

            To load completions for every new session, execute once:

            \t\(name) completion fish > ~/.config/fish/completions/\(name).fish

            You will need to start a new shell for this setup to take effect.

            """, script: fishCompletionScript),
        shell("powershell", long: """
            Generate the autocompletion script for powershell.

            To load completions in your current shell session:

            \t\(name) completion powershell | Out-String | Invoke-Expression

            To load completions for every new session, add the output of the above command
            to your powershell profile.

            """, script: powershellCompletionScript),
        shell("zsh", long: """
            Generate the autocompletion script for the zsh shell.

            If shell completion is not already enabled in your environment you will need
            to enable it.  You can execute the following once:

            \techo "autoload -U compinit; compinit" >> ~/.zshrc

            To load completions in your current shell session:

            \tsource <(\(name) completion zsh); compdef _\(name) \(name)

            To load completions for every new session, execute once:

            #### Linux:

            \t\(name) completion zsh > "${fpath[1]}/_\(name)"

            #### macOS:

            \t\(name) completion zsh > $(brew --prefix)/share/zsh/site-functions/_\(name)

            You will need to start a new shell for this setup to take effect.

            """, script: zshCompletionScript))
    return completion
}

/// A shell function name made of the program's name (`-` and `.` are not allowed everywhere).
private func identifier(_ program: String) -> String {
    String(program.map { $0.isLetter || $0.isNumber ? $0 : "_" })
}

func bashCompletionScript(_ program: String, _ descriptions: Bool) -> String {
    let fn = "_\(identifier(program))_complete"
    let request = descriptions ? Completion.requestCommand : Completion.noDescRequestCommand
    return """
    # bash completion for \(program); it asks `\(program) \(request)` for the candidates.
    # Directive bits: 1 error, 2 no space, 4 no file completion, 8 filter file extensions, 16 directories only.

    \(fn)() {
        local cur words cword
        if declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
            # bash-completion joins `--flag=value` and `host:port` back into one word.
            _get_comp_words_by_ref -n "=:" cur words cword
        else
            words=("${COMP_WORDS[@]}")
            cword=$COMP_CWORD
            cur=${COMP_WORDS[COMP_CWORD]}
        fi
        COMPREPLY=()

        local -a args=("${words[@]:1:cword-1}")
        local output
        output=$("${words[0]}" \(request) "${args[@]}" "$cur" 2>/dev/null)
        local directive=${output##*:}
        [[ $directive =~ ^[0-9]+$ ]] || directive=0
        output=${output%:*}
        (( directive & 1 )) && return

        local -a names=() described=()
        local line name
        while IFS='' read -r line; do
            [[ -z $line ]] && continue
            name=${line%%$'\\t'*}
            names+=("$name")
            if [[ $line == *$'\\t'* ]]; then
                described+=("$name  (${line#*$'\\t'})")
            else
                described+=("$name")
            fi
        done <<< "$output"

        if (( directive & 8 )); then
            local ext pattern=""
            for ext in "${names[@]}"; do pattern+="${pattern:+|}*.$ext"; done
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -f -X "!@($pattern)" -- "$cur") $(compgen -d -- "$cur"))
            return
        fi
        if (( directive & 16 )); then
            compopt -o filenames 2>/dev/null
            if (( ${#names[@]} == 1 )); then
                COMPREPLY=($(cd "${names[0]}" 2>/dev/null && compgen -d -- "$cur"))
            else
                COMPREPLY=($(compgen -d -- "$cur"))
            fi
            return
        fi

        if (( ${#names[@]} == 0 )); then
            if (( ! (directive & 4) )); then
                compopt -o default 2>/dev/null
            fi
            return
        fi
        (( directive & 2 )) && compopt -o nospace 2>/dev/null
        if (( ${#names[@]} == 1 )); then
            COMPREPLY=("${names[0]}")
        else
            # Several candidates: bash only lists them, so show each with its description, one a line.
            local width=${COLUMNS:-80} entry
            for entry in "${described[@]}"; do
                (( ${#entry} > width )) && entry="${entry:0:width-3}..."
                COMPREPLY+=("$entry")
            done
            local common=$(printf '%s\\n' "${names[@]}" | sed -e '$!{N;s/^\\(.*\\).*\\n\\1.*$/\\1\\n\\1/;D;}')
            # A common prefix longer than what is typed is inserted first, as bash does for plain candidates.
            if [[ -n $common && ${#common} -gt ${#cur} ]]; then
                COMPREPLY=("$common")
                compopt -o nospace 2>/dev/null
            fi
        fi
    }

    complete -o default -F \(fn) \(program)

    """
}

func zshCompletionScript(_ program: String, _ descriptions: Bool) -> String {
    let request = descriptions ? Completion.requestCommand : Completion.noDescRequestCommand
    return """
    #compdef \(program)
    # zsh completion for \(program); it asks `\(program) \(request)` for the candidates.

    _\(identifier(program))() {
        local -a args candidates names
        local output directive line name desc
        args=("${words[@]:1:$((CURRENT-2))}")
        output=$("${words[1]}" \(request) "${args[@]}" "${words[CURRENT]}" 2>/dev/null)
        directive=${output##*:}
        [[ $directive == <-> ]] || directive=0
        output=${output%:*}
        (( directive & 1 )) && return 1
        for line in "${(@f)output}"; do
            [[ -z $line ]] && continue
            name=${line%%$'\\t'*}
            names+=("$name")
            if [[ $line == *$'\\t'* ]]; then
                desc=${line#*$'\\t'}
                candidates+=("${name//:/\\\\:}:$desc")
            else
                candidates+=("${name//:/\\\\:}")
            fi
        done
        if (( directive & 8 )); then
            local pattern="*.(${(j:|:)names})"
            _files -g "$pattern"
            return
        fi
        if (( directive & 16 )); then
            if (( ${#names} == 1 )); then
                _files -W "${names[1]}" -/
            else
                _files -/
            fi
            return
        fi
        if (( ${#candidates} > 0 )); then
            if (( directive & 2 )); then
                _describe -t candidates 'candidates' candidates -S ''
            else
                _describe -t candidates 'candidates' candidates
            fi
            return
        fi
        (( directive & 4 )) && return 1
        _files
    }

    if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
        _\(identifier(program)) "$@"
    else
        compdef _\(identifier(program)) \(program)
    fi

    """
}

func fishCompletionScript(_ program: String, _ descriptions: Bool) -> String {
    let request = descriptions ? Completion.requestCommand : Completion.noDescRequestCommand
    let fn = "__\(identifier(program))_complete"
    return """
    # fish completion for \(program); it asks `\(program) \(request)` for the candidates.

    function \(fn)
        set -l words (commandline -opc)
        set -l output (command $words[1] \(request) $words[2..-1] (commandline -ct) 2>/dev/null)
        set -l last $output[-1]
        set -l directive (string replace -r '^:' '' -- $last)
        string match -qr '^[0-9]+$' -- $directive; or set directive 0
        set -e output[-1]
        if test (math "$directive % 2") -eq 1
            return
        end
        if test (count $output) -gt 0
            printf '%s\\n' $output
            return
        end
        # No candidates: files, unless the directive (4) says not to.
        if test (math "floor($directive / 4) % 2") -eq 0
            __fish_complete_path (commandline -ct)
        end
    end

    complete -c \(program) -e
    complete -c \(program) -f -a '(\(fn))'

    """
}

func powershellCompletionScript(_ program: String, _ descriptions: Bool) -> String {
    let request = descriptions ? Completion.requestCommand : Completion.noDescRequestCommand
    return """
    # powershell completion for \(program); it asks `\(program) \(request)` for the candidates.

    Register-ArgumentCompleter -CommandName '\(program)' -Native -ScriptBlock {
        param($WordToComplete, $CommandAst, $CursorPosition)

        $words = @($CommandAst.CommandElements | Where-Object { $_.Extent.StartOffset -lt $CursorPosition } |
            ForEach-Object { $_.Extent.Text })
        $program = $words[0]
        $arguments = @()
        if ($words.Count -gt 1) { $arguments = $words[1..($words.Count - 1)] }
        # The word under the cursor is the partial one; when the cursor is after a space it is a new, empty word.
        if ($WordToComplete -ne '' -and $arguments.Count -gt 0) {
            $arguments = if ($arguments.Count -gt 1) { $arguments[0..($arguments.Count - 2)] } else { @() }
        }
        $output = @(& $program \(request) @arguments "$WordToComplete" 2>$null)
        if ($output.Count -eq 0) { return }
        $directive = 0
        if ($output[-1] -match '^:(\\d+)$') { $directive = [int]$Matches[1] }
        $lines = if ($output.Count -gt 1) { $output[0..($output.Count - 2)] } else { @() }
        if ($directive -band 1) { return }
        if ($lines.Count -eq 0) {
            if (-not ($directive -band 4)) { return $null }  # PowerShell's own path completion
            return ''
        }
        foreach ($line in $lines) {
            $name, $description = $line -split "`t", 2
            if (-not $description) { $description = $name }
            $text = $name
            if (-not ($directive -band 2) -and $lines.Count -eq 1) { $text = "$name " }
            [System.Management.Automation.CompletionResult]::new($text, $name, 'ParameterValue', $description)
        }
    }

    """
}
